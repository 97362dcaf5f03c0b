"""Adapters: consumers of pneumo_core's public API (REST/web via Flask, RunPod)."""
