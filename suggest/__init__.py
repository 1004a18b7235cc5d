"""Which slices a person should label next: `fewsam synth suggest` (no pipeline stage).

It reads training scans only, never their labels, and writes an annotation folder
(`synth.annotations`) that a person paints in ITK-SNAP or 3D Slicer.
"""
