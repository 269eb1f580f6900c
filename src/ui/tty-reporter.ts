import {PlainReporter} from './reporter.js'

/** Live progress on a terminal. Until the live view lands, a terminal gets the plain lines. */
export class TtyReporter extends PlainReporter {}
