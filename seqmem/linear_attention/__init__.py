"""Linear attention (Katharopoulos et al. 2020) and retention (Sun et al. 2023): attention as a recurrence."""

from .module import FEATURE_MAPS, RETENTION, LinearAttention, LinearAttentionState, multiscale_decay

__all__ = ["FEATURE_MAPS", "RETENTION", "LinearAttention", "LinearAttentionState", "multiscale_decay"]
