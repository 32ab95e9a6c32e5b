"""absl entry points: thin scripts over the aejax library."""
