"""ThinkRemed agents: probe, plan, guard, execute, verify, reflect, undo."""
