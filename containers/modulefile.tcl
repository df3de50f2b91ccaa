#%Module1.0
## xreduce/@VERSION@ - written by containers/publish-cvmfs.sh from containers/modulefile.tcl.
## A Tcl modulefile: Lmod and Environment Modules both read it.
##
## Puts a thin `xreduce` wrapper on PATH that runs xreduce inside the Apptainer image
## (apptainer exec [--nv on GPU nodes] --bind $XREDUCE_BINDS <image> xreduce "$@"), and sets
## XREDUCE_IMAGE so that `xreduce submit backend=slurm` runs every job in the same image.

proc ModulesHelp { } {
    puts stderr "xreduce @VERSION@: reduce X-ray scattering experiments (BLISS HDF5 -> NeXus), from an Apptainer image."
    puts stderr ""
    puts stderr "  xreduce selftest                       check it works here (engines, MPI, OpenCL devices)"
    puts stderr "  xreduce run campaign=my_exp ...        reduce on this node"
    puts stderr "  xreduce submit campaign=my_exp backend=slurm ...   one job array + a merge job, all in the image"
    puts stderr ""
    puts stderr "  XREDUCE_BINDS=/data,/scratch           host paths the image sees (default /data)"
    puts stderr "  XREDUCE_NV=0|1                         force --nv off/on (default: on where a GPU is visible)"
    puts stderr "  image: @IMAGE@"
}

module-whatis "xreduce @VERSION@: azimuthal integration of X-ray scattering data (Apptainer image)"
conflict xreduce

set root @ROOT@
setenv XREDUCE_VERSION @VERSION@
setenv XREDUCE_IMAGE @IMAGE@
prepend-path PATH $root/bin
