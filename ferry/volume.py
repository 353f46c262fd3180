"""`ferry.volume`: the types of the volume API (`FileEntry` from `Volume.listdir()`), as
`modal.volume` has them. `Volume` itself is `ferry.Volume`."""

from ._volume import FileEntry, FileEntryType, Volume, VolumeUpload

__all__ = ["FileEntry", "FileEntryType", "Volume", "VolumeUpload"]
