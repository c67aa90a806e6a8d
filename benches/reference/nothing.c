/* Reference milter for markgate's benchmarks: does nothing.
 *
 * Registers only an end-of-message callback that answers CONTINUE, so libmilter negotiates
 * and answers every event with its defaults. It is the floor a milter cannot go below.
 * Build: cc -O2 -o nothing nothing.c -lmilter -lpthread
 * Run:   ./nothing unix:/tmp/nothing.sock   (or inet:PORT@127.0.0.1) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libmilter/mfapi.h>

static sfsistat on_eom(SMFICTX *ctx)
{
	(void)ctx;
	return SMFIS_CONTINUE;
}

int main(int argc, char **argv)
{
	struct smfiDesc desc;

	if (argc != 2) {
		fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
		return 2;
	}
	memset(&desc, 0, sizeof desc);
	desc.xxfi_name = "markgate-bench-nothing";
	desc.xxfi_version = SMFI_VERSION;
	desc.xxfi_flags = 0;
	desc.xxfi_eom = on_eom;
	if (strncmp(argv[1], "unix:", 5) == 0)
		unlink(argv[1] + 5);
	if (smfi_setconn(argv[1]) != MI_SUCCESS || smfi_setbacklog(1024) != MI_SUCCESS ||
	    smfi_register(desc) != MI_SUCCESS) {
		fprintf(stderr, "cannot set up the milter\n");
		return 1;
	}
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
