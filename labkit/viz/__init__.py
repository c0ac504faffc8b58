"""Figures: ``overlay`` (instance overlays, galleries), ``embedding3d`` (plotly 3D
embeddings, mean-shift iterates, random-projection RGB), ``forces`` (the pull and
push of the discriminative loss), ``bandwidth`` (sweep curves, the live explorer of
an embedding map), ``explorer`` (the live explorer on a trained model: decode
sliders, 3D embedding, Save to ``decode.json``)."""
