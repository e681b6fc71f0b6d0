"""The local development stack: Kafka (KRaft), Triton Inference Server and SSH lab hosts.

`remed stack up|down|status` drives it. Everything it starts is recorded under the run
directory (`.run/` by default) so that `down` stops exactly that, and a later `up` can
recover from what a killed run left behind.
"""
