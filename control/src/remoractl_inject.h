/*
 * `remoractl inject` and `remoractl uninject` (docs/injection.md): Kubernetes manifests in (YAML or
 * JSON, several documents, Lists), the same manifests out on standard output with the sidecar
 * added to (or removed from) every pod and pod template, one report line per object on standard
 * error. Offline: no control plane is contacted. The transformation is inject.c's, the webhook's.
 *
 * Main thread of remoractl only; exits the process on usage errors.
 */
#ifndef remora_control__remoractl_inject_h
#define remora_control__remoractl_inject_h

extern const char rm_ctl_inject_help[], rm_ctl_uninject_help[];

/**
 * Runs `inject` or `uninject` (argv[0]). Returns the exit code: 0 done, 1 an object could not be
 * injected (nothing is written then), 2 a usage or input error.
 */
int rm_ctl_inject(int argc, char **argv);

#endif
