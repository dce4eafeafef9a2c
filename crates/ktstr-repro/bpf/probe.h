/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ktstr-repro's probe program: what the host writes into its config map and what the
 * program writes into its ring. Kept in step with src/probe_config.rs (config) and
 * src/event.rs (records); the Rust tests check the sizes and offsets.
 */
#ifndef KTSTR_REPRO_PROBE_H
#define KTSTR_REPRO_PROBE_H

#define KTSTR_REPRO_MAGIC	0x5052544b	/* "KTRP" little-endian */
#define KTSTR_REPRO_VERSION	1
#define KTSTR_REPRO_MAX_FUNCS	64
#define KTSTR_REPRO_MAX_ARGS	6
#define KTSTR_REPRO_MAX_FIELDS	16
#define KTSTR_REPRO_MAX_STACK	32
#define KTSTR_REPRO_MAX_DEREFS	2
#define KTSTR_REPRO_FIELD_BYTES	16
#define KTSTR_REPRO_TRIGGER	0xffff	/* probe index of the exit trigger's records */
#define KTSTR_REPRO_HDR_LEN	48
#define KTSTR_REPRO_SLOT_LEN	(8 + KTSTR_REPRO_FIELD_BYTES)
#define KTSTR_REPRO_MAX_RECORD	(KTSTR_REPRO_HDR_LEN + 8 * KTSTR_REPRO_MAX_ARGS + \
				 KTSTR_REPRO_SLOT_LEN * KTSTR_REPRO_MAX_FIELDS + \
				 8 * KTSTR_REPRO_MAX_STACK)

enum ktstr_repro_kind {
	KTSTR_REPRO_ENTRY	= 0,
	KTSTR_REPRO_EXIT	= 1,
	KTSTR_REPRO_TRIGGER_EV	= 2,
};

/* One field: start at args[arg]; for each of nr_derefs offsets read the pointer at
 * (cur + deref); then read size bytes at (cur + offset), as a string if is_str. */
struct ktstr_repro_field_cfg {
	__u8	arg;
	__u8	nr_derefs;
	__u8	size;
	__u8	is_str;
	__u32	offset;
	__u32	derefs[KTSTR_REPRO_MAX_DEREFS];
};					/* 16 bytes */

/* The config of one probe, at key = its index in the plan (the trigger's at
 * KTSTR_REPRO_MAX_FUNCS). The program finds its key in its attach cookie. */
struct ktstr_repro_probe_cfg {
	__u16	probe;			/* the index written into records */
	__u8	nr_args;
	__u8	nr_fields;
	__u8	has_ret;		/* fexit: record the return value */
	__u8	stack;			/* record the kernel stack */
	__u8	pad[2];
	struct ktstr_repro_field_cfg fields[KTSTR_REPRO_MAX_FIELDS];
};					/* 264 bytes */

/* One slot of the ring of the last events: seq is the record's sequence number + 1
 * (0: never written), len its length in bytes. */
struct ktstr_repro_slot {
	__u64	seq;
	__u32	len;
	__u32	pad;
	__u8	rec[KTSTR_REPRO_MAX_RECORD];
};

_Static_assert(sizeof(struct ktstr_repro_field_cfg) == 16, "field cfg layout");
_Static_assert(sizeof(struct ktstr_repro_probe_cfg) == 264, "probe cfg layout");
_Static_assert(KTSTR_REPRO_MAX_RECORD == 736, "record bound");
_Static_assert(sizeof(struct ktstr_repro_slot) == 752, "slot layout");

#endif
