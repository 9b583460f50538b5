"""Static analysis: source files → call-site records → flow graph."""
