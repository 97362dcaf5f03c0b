"""Out-of-distribution detection: is this image like the chest X-rays the model was trained on?"""
from pneumo_core.ood.profile import OOD_FILE, OodProfile, fit_profile

__all__ = ["OOD_FILE", "OodProfile", "fit_profile"]
