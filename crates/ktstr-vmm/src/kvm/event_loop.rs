//! The I/O thread: an [`event_manager`] loop that serves virtio queue notifications.
//!
//! Each virtqueue of a virtio-MMIO device gets an eventfd that KVM signals itself
//! (`KVM_IOEVENTFD` on the device's QueueNotify register, matching the queue index), so a
//! driver's notification costs the vCPU no exit to this process: the I/O thread wakes, serves
//! the queue under the transport's lock and raises the interrupt through the irqfd. Without
//! an I/O thread (no in-kernel irqchip, or [`crate::kvm::KvmVmBuilder::io_thread`] off),
//! QueueNotify writes reach the transport on the vCPU thread and are served there.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{IoEventAddress, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::devices::virtio::{mmio, VirtioDevice, VirtioMmioTransport};
use super::error::ioctl;
use super::{lock, KvmError};

/// Something the I/O thread serves.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// The queue notifications of one virtio-MMIO device, one eventfd per queue.
pub struct QueueNotifier<D> {
    transport: Arc<Mutex<VirtioMmioTransport<D>>>,
    kicks: Vec<EventFd>,
    served: Arc<AtomicU64>,
}

impl<D: VirtioDevice> QueueNotifier<D> {
    /// Registers one eventfd per queue of `transport` with KVM at QueueNotify of the window
    /// at `base`, matching the queue index; each wake-up served adds one to `served`.
    pub fn register(
        vm: &VmFd,
        base: u64,
        transport: Arc<Mutex<VirtioMmioTransport<D>>>,
        served: Arc<AtomicU64>,
    ) -> Result<Self, KvmError> {
        let queues = lock(&transport).device().queue_max_sizes().len();
        let mut kicks = Vec::with_capacity(queues);
        for q in 0..queues {
            let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| KvmError::Os {
                what: "creating a queue notification eventfd",
                source,
            })?;
            let addr = IoEventAddress::Mmio(base + mmio::QUEUE_NOTIFY);
            vm.register_ioevent(&evt, &addr, q as u32)
                .map_err(ioctl("KVM_IOEVENTFD"))?;
            kicks.push(evt);
        }
        Ok(QueueNotifier {
            transport,
            kicks,
            served,
        })
    }
}

impl<D: VirtioDevice> MutEventSubscriber for QueueNotifier<D> {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let queue = events.data() as usize;
        if let Some(evt) = self.kicks.get(queue) {
            // Reading resets the counter; several kicks are served by one pass over the queue.
            // EAGAIN means another wake-up already consumed it: serving again is harmless.
            let _ = evt.read();
            lock(&self.transport).process(queue);
            self.served.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (q, evt) in self.kicks.iter().enumerate() {
            // Adding a fresh eventfd fails only if the epoll set itself is broken; KVM still
            // diverts the queue's notifications to it, so the queue would stall: say why.
            if let Err(e) = ops.add(Events::with_data(evt, q as u32, EventSet::IN)) {
                eprintln!("ktstr-vmm: I/O thread cannot watch virtqueue {q}: {e}");
            }
        }
    }
}

/// Wakes the loop when its eventfd is written ([`IoThread::stop`] sets the flag first).
struct Stopper {
    evt: EventFd,
}

impl MutEventSubscriber for Stopper {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.evt.read();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.evt, EventSet::IN)) {
            eprintln!("ktstr-vmm: I/O thread cannot watch its stop event: {e}");
        }
    }
}

/// The running I/O thread; dropping it stops and joins the thread.
pub struct IoThread {
    stop: EventFd,
    stopped: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl IoThread {
    /// Starts a thread named `ktstr-io` running an event loop over `subscribers`.
    pub fn start(subscribers: Vec<Subscriber>) -> Result<IoThread, KvmError> {
        let os = |what| move |source| KvmError::Os { what, source };
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(os("creating the I/O stop eventfd"))?;
        let stopped = Arc::new(AtomicBool::new(false));
        let mut manager: EventManager<Subscriber> =
            EventManager::new().map_err(|e| KvmError::Os {
                what: "creating the I/O event loop",
                source: std::io::Error::other(e.to_string()),
            })?;
        for s in subscribers {
            manager.add_subscriber(s);
        }
        let stopper: Subscriber = Arc::new(Mutex::new(Stopper {
            evt: stop
                .try_clone()
                .map_err(os("cloning the I/O stop eventfd"))?,
        }));
        manager.add_subscriber(stopper);
        let flag = Arc::clone(&stopped);
        let thread = std::thread::Builder::new()
            .name("ktstr-io".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    if let Err(e) = manager.run() {
                        eprintln!("ktstr-vmm: I/O event loop failed: {e}");
                        return;
                    }
                }
            })
            .map_err(os("spawning the I/O thread"))?;
        Ok(IoThread {
            stop,
            stopped,
            thread: Some(thread),
        })
    }

    /// Whether the loop is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the loop and waits for the thread.
    pub fn stop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        // A failed write (counter overflow) still leaves a readable eventfd: the loop wakes.
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            // A panic in a device was already printed by the panic hook.
            let _ = t.join();
        }
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Counts wake-ups of one eventfd.
    struct Counter {
        evt: EventFd,
        seen: Arc<Mutex<u64>>,
    }

    impl MutEventSubscriber for Counter {
        fn process(&mut self, _events: Events, _ops: &mut EventOps) {
            if let Ok(n) = self.evt.read() {
                *lock(&self.seen) += n;
            }
        }
        fn init(&mut self, ops: &mut EventOps) {
            ops.add(Events::new(&self.evt, EventSet::IN)).unwrap();
        }
    }

    #[test]
    fn serves_events_until_stopped() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let seen = Arc::new(Mutex::new(0));
        let counter: Subscriber = Arc::new(Mutex::new(Counter {
            evt: evt.try_clone().unwrap(),
            seen: Arc::clone(&seen),
        }));
        let mut io = IoThread::start(vec![counter]).unwrap();
        assert!(io.is_running());
        evt.write(3).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while *lock(&seen) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(*lock(&seen), 3);
        io.stop();
        assert!(!io.is_running());
        // Stopping twice (and dropping) is harmless.
        io.stop();
    }
}
