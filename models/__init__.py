"""Networks, training loop and checkpoints of exfil-detect (see models/nets.py for the shapes)."""

from models.checkpoint import (
    anomaly_score,
    check_features,
    load_checkpoint,
    predict_proba,
    save_checkpoint,
)

__all__ = ["anomaly_score", "check_features", "load_checkpoint", "predict_proba", "save_checkpoint"]
