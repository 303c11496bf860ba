"""Ray-free live logic: the camera spec, its loader and registry, the live analyser
(tracking, dedup, the alert decision), the review book and the alert record.

serve/ wraps these in the Ray and HTTP edges (pool, hub, API, local runner); here they are
plain Python, tested without Ray.
"""
