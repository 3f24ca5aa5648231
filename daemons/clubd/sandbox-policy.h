/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "sandbox.h"

/* What clubd may do once running: serve, proxy, resolve names, re-read its config, log, notify. */
extern const SandboxPolicy clubd_sandbox_policy;

/* Load the policy; with $CLUBD_SANDBOX_SELFTEST=1 prove it by trying exec and ptrace. */
int clubd_sandbox_apply(void);
