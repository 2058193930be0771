/*
 * `remoractl await`: run an application only once its pod's agent is ready, and tell the agent to exit after it
 * (docs/lifecycle.md; linkerd-await's job). For pods without native sidecars, and Jobs.
 */
#ifndef remora__remoractl_await_h
#define remora__remoractl_await_h

extern const char rm_ctl_await_help[];

/**
 * Runs `remoractl await [--ready-url URL] [--shutdown-url URL] [--timeout D] [-- CMD [ARGS...]]`; argv[0] is
 * "await". Polls the ready URL (default http://127.0.0.1:15020/ready) until it answers 200, at most D (default
 * 120s); without CMD returns 0 then. With CMD: runs it with SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2
 * forwarded, POSTs the shutdown URL (default http://127.0.0.1:15000/shutdown) when it ends, and returns its exit
 * status (128 + the signal if it was killed; 127 if it could not be started). Returns 1 when the agent did not become
 * ready in time, 2 on a usage error. Single-threaded caller (it installs signal handlers and forks).
 */
int rm_ctl_await(int argc, char **argv);

#endif
