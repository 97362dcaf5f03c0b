"""Fetch public data sets into the layouts the dataset plugins read (the library; ``pneumo data download`` is ``cli/data_cmd.py``)."""
from pneumo_core.download.kermany import KERMANY_URL, DownloadError, DownloadResult, download_kermany

__all__ = ["KERMANY_URL", "DownloadError", "DownloadResult", "download_kermany"]
