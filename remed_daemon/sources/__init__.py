"""Intakes: Kafka (`kafka.py`) and the Alertmanager webhook payloads (`alertmanager.py`)."""
