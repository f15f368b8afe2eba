"""The data path's middle: observation views, the collector (student acts, teacher labels), robomimic-layout HDF5
datasets and LeRobot datasets in and out, label buffers and the training samples read from them."""
