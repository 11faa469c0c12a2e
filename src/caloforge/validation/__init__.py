"""Physics validation: shower features, metrics, plots and the report."""
