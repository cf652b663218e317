// hra train --nproc N: starts N copies of this command line as data-parallel
// workers with torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE,
// MASTER_ADDR=127.0.0.1, a free MASTER_PORT), forwards SIGINT/SIGTERM to them,
// and when one fails stops the others. Returns the exit code: the first
// failure's, else 130 when they were interrupted, else 0.
#pragma once

#include <string>
#include <vector>

namespace hra::cli {

// The command line as main() received it (argv[1..]), for re-running it.
void set_program_args(int argc, char** argv);
int launch_workers(int nproc);

}  // namespace hra::cli
