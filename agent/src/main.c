/* placeholder: the real entry point lands with the core */
#include <stdio.h>
int
main(void)
{
    fprintf(stderr, "remora-agent: not built yet\n");
    return 1;
}
