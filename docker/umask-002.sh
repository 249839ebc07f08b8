#!/bin/sh
# /opt/preloader/umask/preloader, first on the image's PATH: `preloader` with umask 002.
# The cache volume is shared by containers that may run as other users of group 1000; the files the
# preloader (and the service it execs, which inherits the umask) writes there must be group-writable.
# exec keeps the PID, so tini's signals still reach the preloader and then the service.
umask 002
exec /opt/preloader/bin/preloader "$@"
