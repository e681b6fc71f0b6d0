"""remed daemon: intake, journal, scheduling and remediation of diagnosed incidents."""
