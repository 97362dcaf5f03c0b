"""Fetch public data sets into the layouts the dataset plugins read (``pneumo data download``)."""
from pneumo_core.download.kermany import (KERMANY_URL, DownloadError, DownloadResult, add_cli,
                                          download_kermany)

__all__ = ["KERMANY_URL", "DownloadError", "DownloadResult", "add_cli", "download_kermany"]
