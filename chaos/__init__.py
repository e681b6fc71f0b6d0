"""The chaos lab: a microservice system on the lab hosts, a fault catalog and `remed bench`."""
