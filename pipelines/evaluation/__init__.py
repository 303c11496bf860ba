"""Accuracy evaluations of the face engine on public benchmarks (LFW) and watch lists.

Each evaluation runs the same detect -> align -> embed code as production, so its numbers
describe the system that is deployed, not a separately tuned research pipeline.
"""
