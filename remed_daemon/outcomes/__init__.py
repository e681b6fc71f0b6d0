"""Outcomes: one record per finished incident on `remed.outcomes`.

- `document`: the outcome document and the builder that puts it into the journal's outbox;
- `producer`: the Kafka producer that drains the outbox.

Nothing is imported here, so building an outcome (the scheduler, the intakes) never loads the
producer or aiokafka.
"""
