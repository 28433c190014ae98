"""Sparkplug B payload schema and the code protoc generated from it."""
