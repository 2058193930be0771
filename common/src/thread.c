#include "remora/thread.h"

void
rm_thread_handled_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
}

int
rm_thread_create(pthread_t *thread, void *(*start)(void *), void *arg)
{
    sigset_t handled, old;
    rm_thread_handled_signals(&handled);
    /* the new thread inherits the creator's mask at creation, so no signal can reach it before it is blocked */
    pthread_sigmask(SIG_BLOCK, &handled, &old);
    int r = pthread_create(thread, NULL, start, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r;
}
