"""Fully supervised data sets in their standard layouts."""
