/* The snapshot payload's frame, shared by its writer (checkpoint.c) and
 * its reader (checkpoint_load.c); the layout is docs/DESIGN.md's
 * "Snapshot payload". */
#ifndef CLICKFLOW_CHECKPOINT_INT_H
#define CLICKFLOW_CHECKPOINT_INT_H

#define SNAP_MAGIC 0x50414e53464355ull   /* "UCFSNAP" */
/* 2: pane-based window state (cf_winop CFW2); 3: the hash key in the
 * sequencer part; 4: the SQL definitions after the dedup table (a version 3
 * snapshot still loads: it had none). */
/* 5: the SQL tables' rows after the definitions (tables.h). 6: the dedup
 * table may be a delta of an earlier snapshot's (i64 dedup_base before it:
 * 0, or the LSN of the snapshot it applies to; older versions are whole). */
#define SNAP_VERSION 6u

#endif
