"""The shop on the lab hosts: topology, provisioning, SSH access, steady-state probes and load."""
