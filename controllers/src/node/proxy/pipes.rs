//! Kernel pipes for splice(2), kept between connections instead of made two per connection.
//!
//! A forwarded TCP connection moves its bytes through one pipe per direction. Making a pipe
//! is two file descriptors and, for a larger one, an `fcntl`; closing it is two more system
//! calls. Short connections pay that on every request, so pipes that come back empty from
//! a connection that ended cleanly are kept, up to [`POOL_SIZE`], for the next ones. A pipe
//! from a connection that ended with an error may still hold bytes and is closed instead.

use std::io;
use std::sync::{Mutex, Once, PoisonError};

use realm_io::Pipe;

/// Pipes kept for reuse; two per open connection, beyond which new connections make
/// their own and close them afterwards.
pub const POOL_SIZE: usize = 32;

/// Each pipe's capacity (`F_SETPIPE_SZ`): four times Linux's default, so a bulk stream
/// moves 256 KiB per pair of splice calls. Within the unprivileged limit
/// (`/proc/sys/fs/pipe-max-size`, 1 MiB by default); where the kernel refuses it, a
/// pipe keeps the default size.
pub const PIPE_SIZE: usize = 256 * 1024;

/// The process's pipes for splice.
pub static PIPES: PipePool = PipePool::new(POOL_SIZE);

static SIZE: Once = Once::new();

/// Empty pipes, ready for the next connection.
pub struct PipePool {
    pipes: Mutex<Vec<Pipe>>,
    capacity: usize,
}

impl PipePool {
    /// A pool that keeps up to `capacity` pipes.
    pub const fn new(capacity: usize) -> PipePool {
        PipePool {
            pipes: Mutex::new(Vec::new()),
            capacity,
        }
    }

    /// A pipe from the pool, or a new one of [`PIPE_SIZE`] when the pool is empty.
    ///
    /// # Errors
    /// When no pipe can be made (out of file descriptors).
    pub fn take(&self) -> io::Result<Pipe> {
        if let Some(pipe) = self.pipes().pop() {
            return Ok(pipe);
        }
        // The size is process-wide in realm_io: set once, before the first pipe is made.
        SIZE.call_once(|| realm_io::set_pipe_size(PIPE_SIZE));
        Pipe::new()
    }

    /// Gives back a pipe that is empty (its connection ended cleanly: every byte spliced
    /// into it was spliced out again); closes it when the pool is full.
    pub fn give_back(&self, pipe: Pipe) {
        let mut pipes = self.pipes();
        if pipes.len() < self.capacity {
            pipes.push(pipe);
        }
    }

    fn pipes(&self) -> std::sync::MutexGuard<'_, Vec<Pipe>> {
        self.pipes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_come_back_up_to_the_capacity() {
        let pool = PipePool::new(2);
        let pipes: Vec<Pipe> = (0..3).map(|_| pool.take().unwrap()).collect();
        for pipe in pipes {
            pool.give_back(pipe);
        }
        assert_eq!(pool.pipes().len(), 2);
        let _pipe = pool.take().unwrap();
        assert_eq!(pool.pipes().len(), 1);
    }
}
