"""Reading and writing files every reduction kind shares: BLISS raw data, images, PONI files, atomic writes."""

#: How a kind's merge writes per-frame data: virtual datasets over the chunk files, or a self-contained copy.
#: (Here, not in reduction.io.merge, so that reduction.step can name it without importing h5py.)
MERGE_MODES = ("vds", "copy")
