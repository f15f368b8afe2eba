"""The data path's middle: observation views, the collector (student acts, teacher labels), robomimic-layout HDF5
datasets, label buffers and the training samples read from them."""
