"""tljax: one jaxpr, many semantics."""
