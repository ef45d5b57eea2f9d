"""HTTP routes of the native API, one module per resource."""
