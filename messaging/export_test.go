package messaging

// TimerWait exposes timerWait to the external tests.
var TimerWait = timerWait
