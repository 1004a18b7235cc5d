"""Volume inference, 3D metrics, the zero-shot baseline, reports and `fewsam predict`."""
