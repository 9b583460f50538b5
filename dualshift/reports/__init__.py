"""Reports: the interaction map, data-flow diagrams and the HTML report."""
