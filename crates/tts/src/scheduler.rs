//! Continuous batching of speech requests: one worker thread owns a slot session of the LM and
//! the slot decoders of the codec, with `max_batch` slots. A request waits in a bounded queue,
//! joins a free slot at the next frame boundary, and every decoding step advances every active
//! slot by one frame in one batched forward; its audio is decoded and handed out frame by frame.
//! A slot is reset (LM cache, codec state) whenever a piece of text starts in it, so what a
//! request hears depends only on itself, never on its neighbours or on the slot's past.

use std::collections::{HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use speechinfer_codec::{Codec, SlotDecoders, SlotFrames};
use speechinfer_core::{Error, Result};
use speechinfer_lm::{SlotSession, SpeechLm, StreamSampling};

use crate::aligned::{logits_of, step_slot, text_lead, AlignedPiece, PieceSpec};

#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Slots decoded together.
    pub max_batch: usize,
    /// Requests that may wait for a slot; more are refused.
    pub max_queue: usize,
}

/// What to say: the pieces of one text, spoken one after the other in the same slot, joined by
/// `silence_samples` of silence.
#[derive(Debug, Clone)]
pub struct SpeechRequest {
    pub voice_token: i64,
    pub pieces: Vec<Vec<i64>>,
    pub seed: u64,
    pub max_frames: usize,
    pub max_tail_frames: usize,
    pub silence_samples: usize,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// The next samples of a request (mono, the codec's rate).
    Audio { id: u64, samples: Vec<f32> },
    /// The request ended normally after `frames` audio frames.
    Done { id: u64, frames: usize },
    /// The request was cancelled (it frees its slot).
    Cancelled { id: u64 },
    /// The engine failed on this request; the others go on.
    Failed { id: u64, message: String },
}

impl Event {
    pub fn id(&self) -> u64 {
        match self {
            Event::Audio { id, .. }
            | Event::Done { id, .. }
            | Event::Cancelled { id }
            | Event::Failed { id, .. } => *id,
        }
    }
}

/// Counters for metrics; a snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub active: usize,
    pub queued: usize,
    pub frames_decoded: u64,
    pub steps: u64,
    pub step_seconds: f64,
}

#[derive(Default)]
struct Inbox {
    queue: VecDeque<(u64, SpeechRequest)>,
    cancelled: HashSet<u64>,
    active: usize,
    shutdown: bool,
    cancel_active: bool,
}

struct Shared {
    inbox: Mutex<Inbox>,
    wake: Condvar,
    events: Mutex<VecDeque<Event>>,
    event_ready: Condvar,
    frames_decoded: AtomicU64,
    steps: AtomicU64,
    step_nanos: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn emit(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        lock(&self.events).extend(events);
        self.event_ready.notify_all();
    }
}

/// Refusals of [`Scheduler::submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is busy and the queue is full.
    Full { active: usize, queued: usize },
    /// The scheduler is shutting down.
    ShuttingDown,
}

pub struct Scheduler {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
    next_id: AtomicU64,
    config: SchedulerConfig,
}

impl Scheduler {
    /// Starts the worker thread. `sampling` is the per-stream sampling of every request (the
    /// pipeline's); guided when it has a `cfg_scale`.
    pub fn start(
        lm: Arc<SpeechLm>,
        codec: Arc<Codec>,
        sampling: StreamSampling,
        config: SchedulerConfig,
    ) -> Result<Self> {
        if config.max_batch == 0 {
            return Err(Error::input("max_batch must be at least 1"));
        }
        text_lead(&lm)?;
        let session = lm.slot_session(config.max_batch, sampling.uses_cfg())?;
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            wake: Condvar::new(),
            events: Mutex::new(VecDeque::new()),
            event_ready: Condvar::new(),
            frames_decoded: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            step_nanos: AtomicU64::new(0),
        });
        let worker = Worker {
            slots: (0..config.max_batch).map(|_| None).collect(),
            decoders: SlotDecoders::new(config.max_batch),
            lm,
            codec,
            sampling,
            session,
            shared: shared.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("speechinfer-scheduler".into())
            .spawn(move || worker.run())
            .map_err(|e| Error::internal(format!("cannot start the scheduler thread: {e}")))?;
        Ok(Self {
            shared,
            worker: Mutex::new(Some(handle)),
            next_id: AtomicU64::new(1),
            config,
        })
    }

    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// Queues a request; it joins a slot at the next frame boundary when one is free. Refused
    /// when `max_batch` requests are active and `max_queue` wait.
    pub fn submit(&self, request: SpeechRequest) -> std::result::Result<u64, Refusal> {
        let mut inbox = lock(&self.shared.inbox);
        if inbox.shutdown {
            return Err(Refusal::ShuttingDown);
        }
        let free = self.config.max_batch.saturating_sub(inbox.active);
        if inbox.queue.len() >= free + self.config.max_queue {
            return Err(Refusal::Full {
                active: inbox.active,
                queued: inbox.queue.len(),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        inbox.queue.push_back((id, request));
        drop(inbox);
        self.shared.wake.notify_all();
        Ok(id)
    }

    /// Ends a request (queued or active) before the next frame; a [`Event::Cancelled`] follows
    /// unless it had already ended.
    pub fn cancel(&self, id: u64) {
        lock(&self.shared.inbox).cancelled.insert(id);
        self.shared.wake.notify_all();
    }

    /// Events since the last call, waiting up to `timeout` for the first.
    pub fn poll(&self, timeout: Duration) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut events = lock(&self.shared.events);
        while events.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            events = self
                .shared
                .event_ready
                .wait_timeout(events, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        events.drain(..).collect()
    }

    pub fn stats(&self) -> Stats {
        let inbox = lock(&self.shared.inbox);
        Stats {
            active: inbox.active,
            queued: inbox.queue.len(),
            frames_decoded: self.shared.frames_decoded.load(Ordering::Relaxed),
            steps: self.shared.steps.load(Ordering::Relaxed),
            step_seconds: self.shared.step_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        }
    }

    /// Stops admitting requests; `cancel_active`: end the active and queued ones now, else
    /// let them finish. Waits for the worker to stop.
    pub fn shutdown(&self, cancel_active: bool) {
        {
            let mut inbox = lock(&self.shared.inbox);
            inbox.shutdown = true;
            inbox.cancel_active |= cancel_active;
        }
        self.shared.wake.notify_all();
        if let Some(handle) = lock(&self.worker).take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown(true);
    }
}

/// A request in a slot.
struct Active {
    id: u64,
    request: SpeechRequest,
    piece_index: usize,
    piece: AlignedPiece,
    /// Frames of the current piece taken from the session (frame 0 is the voice frame).
    frames_taken: usize,
    audio_frames: usize,
}

struct Worker {
    slots: Vec<Option<Active>>,
    decoders: SlotDecoders,
    lm: Arc<SpeechLm>,
    codec: Arc<Codec>,
    sampling: StreamSampling,
    session: SlotSession,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(mut self) {
        let shared = self.shared.clone();
        loop {
            let mut events = Vec::new();
            {
                let mut inbox = lock(&shared.inbox);
                if inbox.cancel_active {
                    let ids: Vec<u64> = inbox.queue.iter().map(|(id, _)| *id).collect();
                    inbox.cancelled.extend(ids);
                    let active: Vec<u64> = self.slots.iter().flatten().map(|a| a.id).collect();
                    inbox.cancelled.extend(active);
                }
                self.apply_cancellations(&mut inbox, &mut events);
                self.admit(&mut inbox, &mut events);
                inbox.active = self.slots.iter().flatten().count();
                if inbox.active == 0 {
                    if inbox.shutdown && inbox.queue.is_empty() {
                        drop(inbox);
                        shared.emit(events);
                        return;
                    }
                    drop(inbox);
                    shared.emit(events);
                    let inbox = lock(&shared.inbox);
                    if inbox.queue.is_empty() && !inbox.shutdown && inbox.cancelled.is_empty() {
                        let _ = shared.wake.wait_timeout(inbox, Duration::from_millis(200));
                    }
                    continue;
                }
            }
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| self.step(&mut events)));
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("the engine panicked during a decoding step".to_string()),
            };
            if let Some(message) = failure {
                // A failure of the batched step: every request in it fails, the slots are freed.
                for slot in 0..self.slots.len() {
                    if let Some(active) = self.slots[slot].take() {
                        events.push(Event::Failed {
                            id: active.id,
                            message: message.clone(),
                        });
                    }
                }
            }
            shared.steps.fetch_add(1, Ordering::Relaxed);
            self.shared
                .step_nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            lock(&shared.inbox).active = self.slots.iter().flatten().count();
            shared.emit(events);
        }
    }

    fn apply_cancellations(&mut self, inbox: &mut Inbox, events: &mut Vec<Event>) {
        if inbox.cancelled.is_empty() {
            return;
        }
        let cancelled = std::mem::take(&mut inbox.cancelled);
        inbox.queue.retain(|(id, _)| {
            let keep = !cancelled.contains(id);
            if !keep {
                events.push(Event::Cancelled { id: *id });
            }
            keep
        });
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|a| cancelled.contains(&a.id)) {
                if let Some(active) = slot.take() {
                    events.push(Event::Cancelled { id: active.id });
                }
            }
        }
    }

    fn admit(&mut self, inbox: &mut Inbox, events: &mut Vec<Event>) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                continue;
            }
            let Some((id, request)) = inbox.queue.pop_front() else {
                return;
            };
            match self.begin(slot, id, request, 0) {
                Ok(active) => self.slots[slot] = Some(active),
                Err(e) => events.push(Event::Failed {
                    id,
                    message: e.to_string(),
                }),
            }
        }
    }

    /// Starts piece `piece_index` of `request` in `slot` (slot reset in the LM and the codec).
    fn begin(
        &mut self,
        slot: usize,
        id: u64,
        request: SpeechRequest,
        piece_index: usize,
    ) -> Result<Active> {
        let text = request
            .pieces
            .get(piece_index)
            .cloned()
            .ok_or_else(|| Error::input("a speech request needs at least one piece of text"))?;
        let spec = PieceSpec {
            voice_token: request.voice_token,
            text,
            seed: request.seed,
            max_frames: request.max_frames,
            max_tail_frames: request.max_tail_frames,
        };
        let piece = AlignedPiece::new(
            &self.lm,
            spec,
            self.session.guided(),
            self.codec.codebook_size(),
        )?;
        self.session
            .start(&self.lm, slot, self.sampling.clone(), request.seed)?;
        self.decoders.reset(slot)?;
        Ok(Active {
            id,
            request,
            piece_index,
            piece,
            frames_taken: 0,
            audio_frames: 0,
        })
    }

    /// One frame for every active slot: push, one batched run, end-of-speech draws, flushes,
    /// then the new audio frames of every slot through the codec.
    fn step(&mut self, events: &mut Vec<Event>) -> Result<()> {
        let lm = self.lm.clone();
        for slot in 0..self.slots.len() {
            let Some(active) = self.slots[slot].as_mut() else {
                continue;
            };
            if let Err(e) = step_slot(&lm, &mut self.session, slot, &mut active.piece) {
                self.fail(slot, e, events);
            }
        }
        self.session.run(&lm)?;
        let mut flushed = Vec::new();
        for slot in 0..self.slots.len() {
            let Some(active) = self.slots[slot].as_mut() else {
                continue;
            };
            let ended = match logits_of(&self.session, slot, 1) {
                Ok(logits) => active
                    .piece
                    .after_step(logits)
                    .map(|_| active.piece.finished()),
                Err(e) => Err(e),
            };
            match ended {
                Err(e) => self.fail(slot, e, events),
                Ok(true) => {
                    self.session.flush(slot)?;
                    flushed.push(slot);
                }
                Ok(false) => {}
            }
        }
        if !flushed.is_empty() {
            self.session.run(&lm)?;
            for &slot in &flushed {
                self.session.finish_flush(slot)?;
            }
        }
        self.decode_new_frames(events)?;
        for slot in flushed {
            self.next_piece(slot, events);
        }
        Ok(())
    }

    /// Takes every slot's completed frames and decodes their audio codes in one batched call.
    fn decode_new_frames(&mut self, events: &mut Vec<Event>) -> Result<()> {
        let q = self.lm.num_streams() - 1;
        let mut codes: Vec<(usize, Vec<i64>, usize)> = Vec::new();
        for slot in 0..self.slots.len() {
            let Some(active) = self.slots[slot].as_mut() else {
                continue;
            };
            let (frames, n) = self.session.take(slot)?;
            let first = active.frames_taken;
            active.frames_taken += n;
            let limit = active.piece.audio_limit();
            let audio: Vec<usize> = (first..first + n)
                .filter(|&f| f >= 1 && f < limit)
                .collect();
            if audio.is_empty() {
                continue;
            }
            let mut slot_codes = Vec::with_capacity(q * audio.len());
            for k in 1..=q {
                slot_codes.extend(audio.iter().map(|&f| frames[k * n + (f - first)]));
            }
            active.audio_frames += audio.len();
            codes.push((slot, slot_codes, audio.len()));
        }
        let jobs: Vec<SlotFrames> = codes
            .iter()
            .map(|(slot, codes, frames)| SlotFrames {
                slot: *slot,
                codes,
                frames: *frames,
            })
            .collect();
        let audio = self.decoders.decode(&self.codec, &jobs)?;
        let frames: usize = codes.iter().map(|c| c.2).sum();
        self.shared
            .frames_decoded
            .fetch_add(frames as u64, Ordering::Relaxed);
        for ((slot, _, _), samples) in codes.iter().zip(audio) {
            if let Some(active) = &self.slots[*slot] {
                events.push(Event::Audio {
                    id: active.id,
                    samples,
                });
            }
        }
        Ok(())
    }

    /// After a piece ended in `slot`: the next piece starts there, or the request is done.
    fn next_piece(&mut self, slot: usize, events: &mut Vec<Event>) {
        let Some(active) = self.slots[slot].take() else {
            return;
        };
        let next = active.piece_index + 1;
        if next >= active.request.pieces.len() {
            events.push(Event::Done {
                id: active.id,
                frames: active.audio_frames,
            });
            return;
        }
        events.push(Event::Audio {
            id: active.id,
            samples: vec![0.0; active.request.silence_samples],
        });
        let (id, frames) = (active.id, active.audio_frames);
        match self.begin(slot, id, active.request, next) {
            Ok(mut started) => {
                started.audio_frames = frames;
                self.slots[slot] = Some(started);
            }
            Err(e) => events.push(Event::Failed {
                id,
                message: e.to_string(),
            }),
        }
    }

    fn fail(&mut self, slot: usize, error: Error, events: &mut Vec<Event>) {
        if let Some(active) = self.slots[slot].take() {
            events.push(Event::Failed {
                id: active.id,
                message: error.to_string(),
            });
        }
    }
}
