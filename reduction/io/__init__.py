"""Reading and writing files every reduction kind shares: BLISS raw data, images, PONI files, atomic writes."""
