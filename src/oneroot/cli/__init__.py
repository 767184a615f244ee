"""The command line: argument parsing, tables / --json output, exit codes."""
