"""Total counts and maximum per frame (``reduction=sum``): the smallest reduction kind.

It is the worked example of the kind contract (:mod:`reduction.step`; docs/internals.md, "Adding a
reduction kind"): a schema, a step writing chunk files, ``is_done``, a merge into one NeXus master
per experiment, a preview and a known-answer selftest, registered only through the
``xreduce.kinds`` entry-point group, as a kind of another distribution would be.
"""
