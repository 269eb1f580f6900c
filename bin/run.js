#!/usr/bin/env node
import {launch} from '../dist/src/cli/launch.js'

await launch(import.meta.url)
