/*
 * Threads that leave the process's signals to the thread that handles them.
 *
 * The agent handles SIGTERM, SIGINT, SIGHUP and SIGUSR1 on its main loop (libuv's signal handles). A
 * process-directed signal goes to any thread that does not block it, and while no handler is installed
 * (the moment the main loop closes its signal handles at exit) the default action kills the whole
 * process. Every other thread therefore blocks these signals from its first instruction on: it is
 * created with them blocked.
 */
#ifndef remora__thread_h
#define remora__thread_h

#include <pthread.h>
#include <signal.h>

/** Fills `set` with the signals the main thread handles: SIGTERM, SIGINT, SIGHUP and SIGUSR1. */
void rm_thread_handled_signals(sigset_t *set);

/**
 * pthread_create with rm_thread_handled_signals() blocked in the new thread (the caller's mask is
 * unchanged on return). Returns 0 or an errno value, as pthread_create does.
 */
int rm_thread_create(pthread_t *thread, void *(*start)(void *), void *arg);

#endif
