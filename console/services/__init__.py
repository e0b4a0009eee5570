"""What both the CLI (`console.commands`) and the TUI use: the receiver service, the control API,
the replay engine, key probes, assistant checks."""
