//! Killing a whole process group (`killpg(2)` through `nix`): an exec probe
//! runs in a group of its own, so its command and everything the command
//! forked go together.

use std::io;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Sends `SIGKILL` to every process of group `pgid`. A group that no longer
/// exists is not an error (`ESRCH`: all gone already). Ids 0 and 1 are
/// refused: `killpg(0)` is the caller's own group (lb-proxy itself), and no
/// group lb-proxy creates can be init's.
pub(crate) fn kill_process_group(pgid: u32) -> io::Result<()> {
    let pgid = match i32::try_from(pgid) {
        Ok(id) if id > 1 => id,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a process group lb-proxy started: {pgid}"),
            ))
        }
    };
    match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_group_and_init_are_never_signalled() {
        assert!(kill_process_group(0).is_err());
        assert!(kill_process_group(1).is_err());
        assert!(kill_process_group(u32::MAX).is_err());
    }
}
