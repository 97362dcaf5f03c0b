"""Data pipeline of the core: preprocessing, patient-grouped splits, decoded-image cache."""
