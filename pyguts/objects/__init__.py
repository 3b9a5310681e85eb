"""The core that reads object memory: layouts, structs, memory, refs, mutate, explain, diagrams."""
