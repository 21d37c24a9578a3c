"""recops benchmarks: each module backs one `recops bench <name>` command."""
