"""fewsam: few-exemplar fine-tuning of Segment Anything for medical image segmentation."""

__version__ = "0.1.0"
