"""The run report: blocks, plots and the self-contained HTML file."""
